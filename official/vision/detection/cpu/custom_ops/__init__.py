"""The package's CPU training operators as MegEngine custom operators (one library built by
``make setup``): convolutions on oneDNN (conv.cpp, conv.py), the optimizers' updates in one
pass per parameter (optimizer.cpp, optimizer.py), max pooling's gradient (pool.cpp, pool.py),
training-mode batch normalization (batch_norm.cpp, batch_norm.py) and group normalization
(group_norm.cpp, group_norm.py); library.py builds and loads them."""
