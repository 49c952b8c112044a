from tests.scale.run import main

main()
