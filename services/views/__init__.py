"""Read models (issue 15): caseloads, outcomes and progress, kept from the stores' notification
logs by :mod:`services.views.projection` into the view store (:mod:`services.views.store`),
read through :class:`services.views.queries.Views`; outcome rules in :mod:`services.views.outcomes`."""
