"""The multi-task model: trunk of conv layers, heads, loss, summary."""
