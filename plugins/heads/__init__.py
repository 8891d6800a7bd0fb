"""Built-in head plugins, one file each (`hydradgl list-plugins` lists them with their options)."""
