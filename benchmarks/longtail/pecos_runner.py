"""PECOS XR-Linear on the features a peer row hands over, in PECOS's own virtual environment.

PECOS (libpecos 1.2.8) pins numpy < 2 and scipy < 1.14, which the project's environment cannot hold, so the
peer row runs this file with the interpreter of `.venv-pecos` (`make bench-pecos`), as a script: it imports
numpy, scipy and pecos only, never the project.

    python pecos_runner.py train DIR
    python pecos_runner.py predict DIR TOP_K BEAM_SIZE

`train` reads DIR/x_train.npz and DIR/y_train.npz (scipy CSR), trains XR-Linear with PECOS's defaults (PIFA
label embeddings, hierarchical k-means label tree, the linear one-vs-rest rankers of its README) and saves
it in DIR/model; `predict` reads DIR/x.npz and writes DIR/scores.npz: the TOP_K best labels per document
with their scores (beam search over the label tree, width BEAM_SIZE; PECOS's default is 10).
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel


def _csr(path: str) -> sp.csr_matrix:
    return sp.load_npz(path).tocsr().astype(np.float32)


def train(folder: str) -> None:
    x_train, y_train = _csr(f"{folder}/x_train.npz"), _csr(f"{folder}/y_train.npz")
    label_features = LabelEmbeddingFactory.create(y_train, x_train, method="pifa")
    cluster_chain = Indexer.gen(label_features)
    XLinearModel.train(x_train, y_train, C=cluster_chain).save(f"{folder}/model")


def predict(folder: str, top_k: int, beam_size: int) -> None:
    model = XLinearModel.load(f"{folder}/model")
    scores = model.predict(_csr(f"{folder}/x.npz"), beam_size=beam_size, only_topk=top_k)
    sp.save_npz(f"{folder}/scores.npz", sp.csr_matrix(scores, dtype=np.float32))


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"] and len(sys.argv) == 3:
        train(sys.argv[2])
    elif sys.argv[1:2] == ["predict"] and len(sys.argv) == 5:
        predict(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
