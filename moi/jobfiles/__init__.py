"""Job files: a directory per job, its inputs checked and fetched, its outputs read back, its log followed.

The layer may import the layers below it (queue, storage, core). Its modules:

    ``directory``      a directory per job, and where it is
    ``inputs``         placing a job's inputs at submit time: its directory made, inputs copied in, URIs checked
    ``input_policy``   which inputs a job may name: the operator's grant, checked at submit and at fetch
    ``uri_transfers``  moving files by URI: inputs and resources in, outputs out
    ``on_engine``      a job's directory on the engine: inputs fetched, the job's environment, output sent out
    ``reading``        reading a job's directory: its files listed, opened and counted, confined to it
    ``by_descriptor``  directories read by descriptor, never through a link, and a walk of a whole tree
    ``removal``        removing job directories: one, those of removed jobs, and those whose job is gone
    ``log_tail``       a job's ``framework.log`` followed over the websocket, bounded
"""
