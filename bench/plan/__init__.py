"""The planner: peak GPU memory, FLOPs and time of one DCT step at full size, predicted on a CPU.

    trace.py     tracing a step on the meta device (live bytes as the CUDA allocator counts them, FLOPs)
    planner.py   the calibrated prediction of one step (memory, FLOPs, time)
    anchor.py    the H200 anchor (data/): calibration of the two constants, validation of every other row
    figure.py    the planned memory-vs-depth figure with the anchor's measured points
    methods.py   full-size cost columns of the methods experiment (s / image, training, peak memory)
    cli.py       `dct bench plan`

May import the grid core, cells/step.py (the very step it plans) and dct; never figures/, search/ or
scale/.
"""
