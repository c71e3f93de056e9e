from kcmbundle.cli import main

main()
