from privacy_service.cli import main

main()
