"""One module per released model (plus the offline demo): Net, Cfg and a hub factory."""
