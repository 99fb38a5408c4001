"""The package's CPU training operators as MegEngine custom operators (one library built by
``make setup``): convolutions on oneDNN (conv.cpp, conv.py), the optimizers' updates in one
pass per parameter (optimizer.cpp, optimizer.py) and max pooling's gradient (pool.cpp,
pool.py); library.py builds and loads them."""
