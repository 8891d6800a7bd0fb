"""Built-in conv layer plugins, one file each: PNA, GraphSAGE, CGCNN."""
