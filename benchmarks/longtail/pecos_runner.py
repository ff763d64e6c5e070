"""PECOS XR-Linear on the features a peer row hands over, in PECOS's own virtual environment.

PECOS (libpecos 1.2.8) pins numpy < 2 and scipy < 1.14, which the project's environment cannot hold, so the
peer row runs this file with the interpreter of `.venv-pecos` (`make bench-pecos`), as a script: it imports
numpy, scipy and pecos only, never the project.

    python pecos_runner.py DIR TOP_K

reads DIR/x_train.npz, DIR/y_train.npz, DIR/x_test.npz (scipy CSR), trains XR-Linear with PECOS's defaults
(PIFA label embeddings, hierarchical k-means label tree, the linear one-vs-rest rankers of its README), and
writes DIR/scores.npz: the TOP_K best labels per test document with their scores (beam search, width 10).
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel


def main(folder: str, top_k: int) -> None:
    x_train = sp.load_npz(f"{folder}/x_train.npz").tocsr().astype(np.float32)
    y_train = sp.load_npz(f"{folder}/y_train.npz").tocsr().astype(np.float32)
    x_test = sp.load_npz(f"{folder}/x_test.npz").tocsr().astype(np.float32)
    label_features = LabelEmbeddingFactory.create(y_train, x_train, method="pifa")
    cluster_chain = Indexer.gen(label_features)
    model = XLinearModel.train(x_train, y_train, C=cluster_chain)
    scores = model.predict(x_test, beam_size=10, only_topk=top_k)
    sp.save_npz(f"{folder}/scores.npz", sp.csr_matrix(scores, dtype=np.float32))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
