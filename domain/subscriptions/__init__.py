"""Subscriptions (issue 14): the subscription as requested, its feed of matched events,
and its deliveries. Three aggregates so that each has one writer: the API writes the
subscription, the service's consumer its feed, its delivery engine the deliveries."""
