"""The package's CPU training operators as MegEngine custom operators (one library built by
``make setup``): convolutions on oneDNN (conv.cpp, conv.py) and the optimizers' updates in one
pass per parameter (optimizer.cpp, optimizer.py); library.py builds and loads them."""
