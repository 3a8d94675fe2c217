"""Policy as code for pull-request review: the CrossGuard pack and the fleet preview."""
