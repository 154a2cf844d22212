"""The small kernel every service shares, each piece defined once.

``problem`` maps the exception tree to ``application/problem+json``; ``body`` reads request
bodies with a cap while they stream; ``health`` builds the ``/health`` document; ``responses``
answers JSON and Prometheus text; ``requests`` gives every request its id and writes the
access log.
"""
