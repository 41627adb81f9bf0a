"""python -m matris.training CONFIG [...]: the same as `matris train`."""

from . import main

if __name__ == "__main__":
    main()
