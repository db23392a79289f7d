"""curvlab: first- and second-order optimization on convex models, measured."""

import os

# numpy's arrays on the kernel's ordinary 4 kB pages unless the user chose otherwise: numpy asks
# for transparent huge pages for every array of 4 MB or more (madvise), read from
# NUMPY_MADVISE_HUGEPAGE when numpy is first imported. On virtual machines that hand freed memory
# back to their host (free page reporting works on 2 MB blocks, the very blocks a huge page takes)
# each huge page written for the first time is a fault on the host: a fresh 376 MB array took
# 0.6-3.3 s to fill on the 2-core development VM against 0.16-0.2 s on 4 kB pages, and the
# full-MNIST Newton-CG benchmark went from 0.27-0.29 to 0.18 of scikit-learn's time (README,
# "Speed"). Elsewhere the difference is a few tens of ms per GB written. Import curvlab
# before numpy for it to apply (every `python -m pipeline.<stage>` does); set the variable to 1 to
# keep numpy's default.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

__version__ = "0.1.0"
