"""The seven stages as Faust agents: thin adapters from a topic to a domain function and back.

Every stage has the same shape (:mod:`agents.runtime`): decode -> domain call -> produce, with
malformed input and handlers that keep failing sent to the input topic's dead-letter topic.
"""
