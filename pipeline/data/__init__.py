"""medsr.pipeline.data: readers, datalists and the embedded demo dataset."""
