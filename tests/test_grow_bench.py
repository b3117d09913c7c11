from grow_bench import flops_to_reach


def test_flops_to_reach_interpolates_a_loss_curve():
    # Crossing points of a loss curve: linear interpolation between evaluations, None if never reached.
    curve = [(0.0, 5.0), (10.0, 3.0), (20.0, 2.0)]
    assert flops_to_reach(curve, 4.0) == 5.0 and flops_to_reach(curve, 2.5) == 15.0
    assert flops_to_reach(curve, 1.0) is None and flops_to_reach(curve, 6.0) == 0.0
