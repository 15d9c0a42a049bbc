from idgenrec.cli import main

main()
