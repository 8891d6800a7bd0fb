"""``python -m hydradgl`` (what torchrun launches): the same CLI as the ``hydradgl`` command."""

from hydradgl.cli import main

if __name__ == "__main__":
    main()
