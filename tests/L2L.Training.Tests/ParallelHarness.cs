// A tiny data-parallel training run shared by the in-process tests and the MPI driver: same model, data and slicing everywhere.
using L2L.Model;
using L2L.Model.Device;
using L2L.Model.Data;
using L2L.Training.Optim;
using L2L.Training.Parallel;

namespace L2L.Training.Tests;

/// <summary>What one rank saw in a run of <see cref="ParallelHarness.Train"/>.</summary>
/// <param name="Losses">The global loss of each step.</param>
/// <param name="Weights">The final weights (every rank holds all of them).</param>
/// <param name="State">The final optimizer state (full, on every rank).</param>
/// <param name="HostBytes">The param server's host bytes on this rank.</param>
/// <param name="StateBytes">The param server's optimizer-state bytes on this rank.</param>
/// <param name="Results">Each step's result.</param>
/// <param name="StepSeconds">Each step's wall time.</param>
/// <param name="StepCpuSeconds">Each step's processor time of this whole process (all its threads).</param>
public sealed record ParallelRun(double[] Losses, float[][] Weights, TrainingState State, long HostBytes, long StateBytes, StepResult[] Results,
    double[] StepSeconds, double[] StepCpuSeconds);

/// <summary>Trains the tiny model with a given setup over a global batch that does not depend on the setup.</summary>
public static class ParallelHarness
{
    /// <summary>2 blocks, 2 heads of 8 channels, vocabulary 32.</summary>
    public static GptConfig Tiny(int layers = 2) => new(VocabSize: 32, MaxPositions: 16, Channels: 16, Layers: layers, Heads: 2);

    /// <summary>
    /// Trains <paramref name="steps"/> AdamW steps (from <paramref name="resume"/> if given) on a global batch of
    /// <paramref name="globalBatch"/> sequences in <paramref name="globalMicroBatches"/> micro-batches; rank r takes
    /// sequences r, r+R, … of each global batch. <paramref name="init"/> replaces the seeded initial weights (to resume); <paramref name="layerClip"/> clips each layer's gradient norm.
    /// </summary>
    public static ParallelRun Train(ParallelSetup setup, int steps, StashPlacement placement, int globalBatch = 8, int globalMicroBatches = 4,
        int seq = 8, TrainingState? resume = null, OptimizerKind optimizer = OptimizerKind.AdamW, GptConfig? config = null, float[][]? init = null,
        float? layerClip = null, DropoutRates? dropout = null, float? globalClip = null, L2L.Backends.Precision precision = L2L.Backends.Precision.Fp32)
    {
        config ??= Tiny();
        var layout = new ModelLayout(config);
        var ranks = setup.WorldSize;
        if (globalBatch % ranks != 0 || globalMicroBatches % ranks != 0)
            throw new ArgumentException($"A global batch of {globalBatch} sequences in {globalMicroBatches} micro-batches does not split across {ranks} ranks.");
        var mb = new MicroBatch(config, globalBatch / globalMicroBatches, seq);
        var loader = new BatchLoader(new SyntheticCorpus(config.VocabSize, 1 << 14, seed: 7), globalBatch, seq);
        var settings = new OptimizerSettings(optimizer, optimizer == OptimizerKind.Sgd ? 0.1f : 3e-3f, WeightDecay: 0.1f);
        var schedule = new LearningRateSchedule(ScheduleKind.Constant, settings.LearningRate);
        var mode = globalClip is null ? Update.UpdateMode.Eager : Update.UpdateMode.Deferred;
        using var eps = init is not null
            ? new EagerParamServer(setup.Devices[0], layout, init, settings, schedule, resume, threads: 2, mode: mode, parallel: setup, precision: precision)
            : new EagerParamServer(setup.Devices[0], layout, Models.LayerInitializer(layout, 11), settings, schedule, resume, threads: 2, mode: mode, parallel: setup, precision: precision);
        var control = layerClip is null && globalClip is null ? null
            : new Update.GradientControl(layerClip ?? globalClip, layerClip is null ? Update.ClipMode.Global : Update.ClipMode.Layer,
                Update.LossScaleMode.None, layout.Layers.Count, resume);
        using var executor = ParallelRelay.Create(setup, eps, mb, globalMicroBatches / ranks, placement, resume, control, dropout: dropout, seed: 5);
        var globalInputs = new int[globalBatch * seq];
        var globalTargets = new int[globalBatch * seq];
        var inputs = new int[globalBatch / ranks * seq];
        var targets = new int[inputs.Length];
        var first = resume?.Step ?? 0;
        var losses = new double[steps];
        var results = new StepResult[steps];
        var seconds = new double[steps];
        var cpuSeconds = new double[steps];
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        for (var k = 0; k < steps; k++)
        {
            loader.Fill(first + k, globalInputs, globalTargets);
            setup.TakeRankShare(globalInputs, inputs, seq);
            setup.TakeRankShare(globalTargets, targets, seq);
            process.Refresh();
            var cpu = process.TotalProcessorTime;
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            results[k] = executor.Step(first + k, inputs, targets);
            seconds[k] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
            process.Refresh();
            cpuSeconds[k] = (process.TotalProcessorTime - cpu).TotalSeconds;
            losses[k] = results[k].Loss;
        }
        return new ParallelRun(losses, executor.Weights(), executor.State(), eps.HostBytes, eps.OptimizerStateBytes, results, seconds, cpuSeconds);
    }

    /// <summary>max |a − b| − (atol + rtol·|a|) over the elements: ≤ 0 when every element is within tolerance.</summary>
    public static double Excess(IReadOnlyList<double> a, IReadOnlyList<double> b, double atol, double rtol)
    {
        if (a.Count != b.Count) return double.PositiveInfinity;
        var worst = double.NegativeInfinity;
        for (var i = 0; i < a.Count; i++)
            worst = Math.Max(worst, Math.Abs(a[i] - b[i]) - (atol + rtol * Math.Abs(a[i])));
        return double.IsNaN(worst) ? double.PositiveInfinity : worst;
    }

    /// <summary>Every layer's values, in layout order, as doubles.</summary>
    public static double[] Flat(IEnumerable<float[]> layers) => layers.SelectMany(l => l).Select(x => (double)x).ToArray();

    /// <summary>The optimizer-state bytes one rank of <paramref name="ranks"/> holds with the state sharded (AdamW: 2 floats per parameter).</summary>
    public static long ShardedStateBytes(ModelLayout layout, int ranks, int rank, int statePerParam = 2) =>
        layout.Layers.Sum(l =>
        {
            var (lo, hi) = ShardLayout.Range(l.Length, ranks, rank);
            return sizeof(float) * statePerParam * (hi - lo);
        });
}
