"""Last line of ``mutation_preload.txt``: after the fork server's imports, move every object they made into the
garbage collector's permanent generation (``gc.freeze``). pytest ends each mutant's run with full collections,
which otherwise walk torch's whole heap in every fork (about a second per mutant) and copy its pages."""

import gc

gc.freeze()
