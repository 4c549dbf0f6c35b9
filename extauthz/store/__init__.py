"""The store plumbing the policy, revocation and step-up stores share: ``redis_hash`` (one
Redis hash per kind, its epoch and revision marks), ``follow`` (keeping a snapshot current
from Redis or a file), ``floor`` (the restore floor that tells a Redis that lost data),
``redis_safety`` (what a Redis must be to hold them), ``redis_client`` (the one factory of
Redis clients: ``redis://`` and ``redis+sentinel://``) and ``cli`` (``extauthz store``)."""
