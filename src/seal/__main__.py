from seal.cli import main

main()
