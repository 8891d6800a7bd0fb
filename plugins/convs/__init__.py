"""Built-in conv layer plugins, one file each (`hydradgl list-plugins` lists them with their options)."""
