from kcmbundle.entry import main

main()
