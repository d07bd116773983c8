from postlane.cli import main

main()
