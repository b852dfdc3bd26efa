"""Task texts as people write them: many phrasings per kind, names quoted or not, paths named or not.

The first template of each kind is the generator's original wording. Every
other one was written after the requests users typed (imperative, bug
report, question, terse chat); the hand-written evaluation set was not
consulted line by line and is never sampled from. A template's fixed words
avoid the name word lists (tested), so scrambling a transcript's names never
changes the request's wording.
"""
from __future__ import annotations

import random

RENAME = (
    "Rename the {symbol} {old} to {new} everywhere in the repository (definition, imports, uses and tests).",
    "Rename {old} to {new}.",
    "Rename {old} to {new} everywhere.",
    "rename {old} to {new} in {path} and the tests",
    "{old} -> {new}, please",
    "{old} should be called {new}. Rename it everywhere.",
    "I want the {symbol} {old} to be called {new}.",
    "{old} in {path} is a terrible name. Call it {new} instead and fix whatever uses it.",
    "Can you rename {old} to {new}? It is used in a few places.",
    "Please rename the {symbol} {old} ({path}) to {new}, including its imports and the tests.",
    "Give {old} a better name: {new}.",
    "We are renaming {old} to {new} across the code base.",
)
KEEP_SIBLING = (" {sibling} keeps its name.", " Leave {sibling} alone.", " Do not touch {sibling}.")

CHANGE_CONSTANT = (
    "Change the constant {name} in {path} from {old} to {new}, and update the test that pins its value.",
    "Change {name} from {old} to {new}.",
    "Set {name} to {new} and fix the tests.",
    "{name} should be {new} now, not {old}. Update the test that pins it too.",
    "Bump {name} in {path} from {old} to {new}, and fix the test that asserts it.",
    "Can you make {name} {new} instead of {old}? The tests need to follow.",
    "We now want {name} = {new}. Please update the tests accordingly.",
    "{name} is {new} from now on (it was {old}).",
    "please set {name} to {new} in {path}, tests included",
    "Raise or lower {name} to {new}; the test that asserts its value has to change as well.",
)

FIX_OFF_BY_ONE = (
    "Fix the off-by-one error in {function} in {path}: {detail}. The test {test} fails.",
    "{function} in {path} has an off-by-one bug: {detail}. Please fix it.",
    "Bug in {path}: {function} is off by one ({detail}).",
    "The test {test} fails because {function} ({path}) is off by one: {detail}. Fix the function, not the test.",
    "{test} is failing. I think {function} in {path} is off by one: {detail}.",
    "Could you fix {function} in {path}? {Detail}.",
    "fix {function} ({path}), {detail}",
    "Why does {test} fail? Looks like an off-by-one in {function}, {path}: {detail}. Please fix it.",
)

ADD_PARAMETER = (
    "Add a parameter {param} with default value {default} to {function} in {path}, and {use}.",
    "{function} in {path} should take a {param} argument (default {default}); {use}.",
    "Could {function} ({path}) accept {param}={default}? {Use}.",
    "add a {param} parameter to {function} in {path}, default {default}, and {use}",
    "Give {function} in {path} an optional {param} (default {default}) and {use}.",
    "I need a {param}={default} keyword on {function} ({path}): {use}.",
    "{function} ({path}) needs a new argument {param}, defaulting to {default}. It should {use}.",
)


def quote(name: str, rng: random.Random) -> str:
    """A name as people write it: in backticks most of the time, bare otherwise."""
    return f"`{name}`" if rng.random() < 0.65 else name


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def phrase(templates: tuple[str, ...], rng: random.Random, names: dict[str, str], plain: dict[str, str]) -> str:
    """One template filled in: `names` are identifiers (quoted or not), `plain` words go in as they are;
    {Key} is the capitalized form of {key}."""
    template = rng.choice(templates)
    values = {k: quote(v, rng) for k, v in names.items()} | plain
    values |= {_capitalized(k): _capitalized(v) for k, v in values.items()}
    return template.format(**values)


def fixed_words() -> set[str]:
    """The lowercase words the templates write themselves (placeholders left out)."""
    import re
    every = RENAME + KEEP_SIBLING + CHANGE_CONSTANT + FIX_OFF_BY_ONE + ADD_PARAMETER
    return {w.lower() for t in every for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", t))}
