// Data-parallel training under mpirun: each rank trains its share and checks itself against a one-process run of the same global batch.
using System.Globalization;
using L2L.Backends;
using L2L.Model;
using L2L.Training;
using L2L.Training.Distributed;
using L2L.Training.Parallel;
using L2L.Training.Tests;

namespace L2L.Distributed.Driver;

internal sealed class TrainingScenarios(MpiCollectives mpi, Action<string> say)
{
    // The tolerance of the in-process tests, for the same reason: the ranks' gradient sums group the micro-batches
    // ((g0+g2)+(g1+g3)) where one process adds them in one running sum, so the bits differ by a rounding.
    private const double Atol = 1e-5, Rtol = 1e-4;
    private const int Steps = 5;

    private static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    private static ulong Hash(IEnumerable<float[]> layers)
    {
        ulong h = 1469598103934665603UL;
        foreach (var l in layers)
            foreach (var x in l)
                h = (h ^ (uint)BitConverter.SingleToInt32Bits(x)) * 1099511628211UL;
        return h;
    }

    /// <summary>Unsharded data parallel over the ranks equals one process on the same global batch.</summary>
    public bool Parity(StashPlacement placement, int devices)
    {
        using var backend = Backend.CreateCpu();
        var more = Enumerable.Range(1, devices - 1).Select(_ => Backend.CreateCpu()).ToArray();
        // With D devices per rank the global batch keeps two micro-batches per device.
        var dist = ParallelHarness.Train(new ParallelSetup([backend, .. more], mpi), Steps, placement, globalBatch: 4 * devices * mpi.WorldSize,
            globalMicroBatches: 2 * devices * mpi.WorldSize);
        foreach (var b in more) b.Dispose();
        var single = ParallelHarness.Train(new ParallelSetup([backend], new SingleProcessCollectives()), Steps, placement, globalBatch: 4 * devices * mpi.WorldSize,
            globalMicroBatches: 2 * devices * mpi.WorldSize);
        var lossExcess = ParallelHarness.Excess(single.Losses, dist.Losses, Atol, Rtol);
        var weightExcess = ParallelHarness.Excess(ParallelHarness.Flat(single.Weights), ParallelHarness.Flat(dist.Weights), Atol, Rtol);
        say($"devices={devices} placement={placement} losses={string.Join(",", dist.Losses.Select(F))} single-losses={string.Join(",", single.Losses.Select(F))}");
        say($"loss-within-tolerance={lossExcess <= 0} weights-within-tolerance={weightExcess <= 0} weights-hash={Hash(dist.Weights):x16} " +
            $"collective-seconds={F(dist.Results.Sum(r => r.CollectiveSeconds))} hidden-seconds={F(dist.Results.Sum(r => r.CollectiveHiddenSeconds))}");
        // Global clipping (deferred updates): the norm of the gradients reduced over every rank sets each step's factor.
        var clippedDist = ParallelHarness.Train(new ParallelSetup([backend], mpi), Steps, placement, globalClip: 0.2f);
        var clippedSingle = ParallelHarness.Train(new ParallelSetup([backend], new SingleProcessCollectives()), Steps, placement, globalClip: 0.2f);
        var clippedExcess = ParallelHarness.Excess(ParallelHarness.Flat(clippedSingle.Weights), ParallelHarness.Flat(clippedDist.Weights), Atol, Rtol);
        var normExcess = ParallelHarness.Excess(clippedSingle.Results.Select(r => r.GradNorm).ToArray(), clippedDist.Results.Select(r => r.GradNorm).ToArray(), 0, Rtol);
        say($"globally-clipped-within-tolerance={clippedExcess <= 0 && normExcess <= 0}");
        return lossExcess <= 0 && weightExcess <= 0 && dist.Losses[^1] < dist.Losses[0] && dist.Results.All(r => r.CollectiveSeconds > 0)
            && clippedExcess <= 0 && normExcess <= 0;
    }

    /// <summary>The sharded param server equals the unsharded one, and holds the predicted share of the optimizer state.</summary>
    public bool Sharded()
    {
        using var backend = Backend.CreateCpu();
        var full = ParallelHarness.Train(new ParallelSetup([backend], mpi), Steps, StashPlacement.Device);
        var sharded = ParallelHarness.Train(new ParallelSetup([backend], mpi, ShardOptimizer: true), Steps, StashPlacement.Device);
        var layout = new ModelLayout(ParallelHarness.Tiny());
        var r = mpi.WorldSize;
        var predictedState = ParallelHarness.ShardedStateBytes(layout, r, mpi.Rank);
        // Besides the state, a sharded rank holds the same weights and staging, plus one padded shard and one gathered layer of scratch.
        var longestShard = layout.Layers.Max(l => ShardLayout.ShardLength(l.Length, r));
        var predictedHost = full.HostBytes - full.StateBytes + predictedState + sizeof(float) * (r + 1) * longestShard;
        var lossExcess = ParallelHarness.Excess(full.Losses, sharded.Losses, Atol, Rtol);
        var weightExcess = ParallelHarness.Excess(ParallelHarness.Flat(full.Weights), ParallelHarness.Flat(sharded.Weights), Atol, Rtol);
        var stateExcess = ParallelHarness.Excess(ParallelHarness.Flat(full.State.LayerStates), ParallelHarness.Flat(sharded.State.LayerStates), Atol, Rtol);
        var identical = full.Losses.SequenceEqual(sharded.Losses) && Hash(full.Weights) == Hash(sharded.Weights);
        // Per-layer clipping needs each layer's norm over every rank's shard.
        var clippedFull = ParallelHarness.Train(new ParallelSetup([backend], mpi), Steps, StashPlacement.Device, layerClip: 0.05f);
        var clippedSharded = ParallelHarness.Train(new ParallelSetup([backend], mpi, ShardOptimizer: true), Steps, StashPlacement.Device, layerClip: 0.05f);
        var clippedAlone = ParallelHarness.Train(new ParallelSetup([backend], new SingleProcessCollectives()), Steps, StashPlacement.Device, layerClip: 0.05f);
        var clippedExcess = Math.Max(
            ParallelHarness.Excess(ParallelHarness.Flat(clippedAlone.Weights), ParallelHarness.Flat(clippedFull.Weights), Atol, Rtol),
            ParallelHarness.Excess(ParallelHarness.Flat(clippedAlone.Weights), ParallelHarness.Flat(clippedSharded.Weights), Atol, Rtol));
        var clipMoved = ParallelHarness.Excess(ParallelHarness.Flat(clippedAlone.Weights), ParallelHarness.Flat(full.Weights), 1e-3, 0) > 0;
        say($"state-bytes={sharded.StateBytes} predicted-state-bytes={predictedState} unsharded-state-bytes={full.StateBytes} " +
            $"host-bytes={sharded.HostBytes} predicted-host-bytes={predictedHost} unsharded-host-bytes={full.HostBytes} " +
            $"host-bytes-per-parameter={F(sharded.HostBytes / (double)layout.TotalLength)} unsharded-host-bytes-per-parameter={F(full.HostBytes / (double)layout.TotalLength)}");
        say($"loss-within-tolerance={lossExcess <= 0} weights-within-tolerance={weightExcess <= 0} state-within-tolerance={stateExcess <= 0} bit-identical={identical} weights-hash={Hash(sharded.Weights):x16}");
        say($"layer-clipped-within-tolerance={clippedExcess <= 0} clipping-changed-the-weights={clipMoved}");
        return lossExcess <= 0 && weightExcess <= 0 && stateExcess <= 0 && sharded.StateBytes == predictedState && sharded.HostBytes == predictedHost
            && clippedExcess <= 0 && clipMoved;
    }

    /// <summary>A snapshot of a sharded 2-rank run resumes identically on 2 ranks and, within tolerance, in one process.</summary>
    public bool Resume()
    {
        using var backend = Backend.CreateCpu();
        var setup = new ParallelSetup([backend], mpi, ShardOptimizer: true);
        var straight = ParallelHarness.Train(setup, Steps, StashPlacement.Device);
        var head = ParallelHarness.Train(setup, 3, StashPlacement.Device);
        var onRanks = ParallelHarness.Train(setup, Steps - 3, StashPlacement.Device, resume: head.State, init: head.Weights);
        var alone = ParallelHarness.Train(new ParallelSetup([backend], new SingleProcessCollectives()), Steps - 3, StashPlacement.Device,
            resume: head.State, init: head.Weights);
        var sameOnRanks = onRanks.Losses.SequenceEqual(straight.Losses[3..]) && Hash(onRanks.Weights) == Hash(straight.Weights);
        var aloneExcess = ParallelHarness.Excess(ParallelHarness.Flat(straight.Weights), ParallelHarness.Flat(alone.Weights), Atol, Rtol);
        var aloneLossExcess = ParallelHarness.Excess(straight.Losses[3..], alone.Losses, Atol, Rtol);
        say($"snapshot-step={head.State.Step} resumed-on-ranks-identical={sameOnRanks} resumed-alone-within-tolerance={aloneExcess <= 0 && aloneLossExcess <= 0}");
        return sameOnRanks && aloneExcess <= 0 && aloneLossExcess <= 0 && head.State.Step == 3;
    }
}
