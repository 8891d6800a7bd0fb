"""Built-in dataset plugins: LSMS reader, extxyz/ASE reader, generated FePt data."""
