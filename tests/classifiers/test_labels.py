"""resolve_class: indices and names, with errors that name the bad value and what is valid."""

from types import SimpleNamespace

import numpy as np
import pytest

from dct.classifiers import resolve_class
from dct.classifiers.labels import hf_labels, imagenet_labels
from dct.errors import ClassNotFoundError

BIRDS = SimpleNamespace(spec="hf:birds", labels=[
    "Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "American Goldfinch", "Crested Auklet"])


@pytest.mark.parametrize("cls, index", [
    (0, 0), (4, 4), ("3", 3), (" 2 ", 2), (np.int64(1), 1),
    ("laysan albatross", 1), ("AMERICAN GOLDFINCH", 3), ("Crest", 4), ("goldfinch", 3),
])
def test_index_and_name(cls, index):
    assert resolve_class(BIRDS, cls) == index


@pytest.mark.parametrize("cls, match", [
    (5, r"out of range.*0\.\.4"), (-1, "out of range"), ("17", "out of range"),
    ("albatross", "ambiguous"), ("Albatros", "ambiguous"),
    ("pelican", "'pelican' not found"), ("goldfnch", "close names: 'american goldfinch'"),
    (True, "bool"), (2.5, "neither"), ("", "empty"),
])
def test_errors_name_the_value(cls, match):
    with pytest.raises(ClassNotFoundError, match=match) as err:
        resolve_class(BIRDS, cls)
    assert "hf:birds" in str(err.value)


def test_imagenet_synonyms():
    clf = SimpleNamespace(spec="x", labels=list(imagenet_labels()))
    assert len(clf.labels) == 1000
    assert resolve_class(clf, "tench") == 0
    assert resolve_class(clf, "Tinca tinca") == 0  # a synonym
    assert resolve_class(clf, "great white shark") == 2
    with pytest.raises(ClassNotFoundError, match="134.*517"):
        resolve_class(clf, "crane")


def test_hf_placeholder_labels_become_generic():
    config = SimpleNamespace(num_labels=3, id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    assert hf_labels(config)[0] == ["class_0", "class_1", "class_2"]
    config = SimpleNamespace(num_labels=2, id2label={"0": "cat", "1": "dog"})
    assert hf_labels(config)[0] == ["cat", "dog"]
