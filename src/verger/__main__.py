from verger.cli.main import main

main()
