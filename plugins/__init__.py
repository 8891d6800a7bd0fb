"""Built-in hydradgl plugins, registered through the `hydradgl` entry-point group like any other."""
