from flowrun.entry import main

main()
