// Publish one SendRequested (plain JSON, keyed by message_id) with kafkajs,
// as a Node service would: node send.js BOOTSTRAP TOPIC MESSAGE_ID TO
const { Kafka, logLevel, CompressionTypes } = require("kafkajs");

async function main() {
  const [bootstrap, topic, messageId, to] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "postlane-node-test", brokers: [bootstrap],
                            logLevel: logLevel.ERROR });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const request = { message_id: messageId, from_: "node@a.test", to: [to],
                    subject: "from kafkajs", text: "published by a Node client" };
  await producer.send({ topic, acks: -1, compression: CompressionTypes.None,
                        messages: [{ key: messageId, value: JSON.stringify(request) }] });
  await producer.disconnect();
  console.log(`published ${messageId}`);
}

main().catch((err) => { console.error(err); process.exit(1); });
