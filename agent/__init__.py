"""The agent: runs registered task handlers from its pool's queue.

Task modules import what they use from the public API (``from sasfleet import Registry,
StepContext, NonRetryableError``); ``sasfleet agent run MODULE`` serves them.
"""
