"""The controller process: leader election, the scheduler, the job dispatcher and the watchers.

Every node runs the API; only the node holding the lease runs the scheduler and the jobs.
"""
