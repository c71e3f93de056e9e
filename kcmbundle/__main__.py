# ``python -m kcmbundle`` skips the fast paths of kcmbundle.entry, so that
# Click's usage line names the program as it was run.
from kcmbundle.cli import main

main()
