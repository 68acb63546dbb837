from kosmesh.cli.main import main

main()
