// Small models and runs shared by the end-to-end training tests.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training;
using L2L.Training.Optim;

namespace L2L.Training.Tests;

internal static class TrainingHarness
{
    /// <summary>A model small enough for the CPU accelerator: 2 heads of 8 channels, vocabulary 32.</summary>
    public static GptConfig Tiny(int layers = 2) => new(VocabSize: 32, MaxPositions: 16, Channels: 16, Layers: layers, Heads: 2);

    public static ITokenSource Corpus(int vocab = 32) => new SyntheticCorpus(vocab, 1 << 14, seed: 7);

    public static TrainOptions Options(GptConfig config, ExecutorKind executor, StashPlacement stash = StashPlacement.Device,
        OptimizerKind optimizer = OptimizerKind.AdamW, int batch = 4, int microBatches = 2, int seq = 8, long steps = 3) => new()
    {
        Config = config,
        Steps = steps,
        Batch = batch,
        MicroBatches = microBatches,
        SeqLen = seq,
        Optimizer = new OptimizerSettings(optimizer, optimizer == OptimizerKind.Sgd ? 0.1f : 3e-3f, WeightDecay: 0.1f),
        Executor = executor,
        Stash = stash,
        Seed = 11,
        OptimizerThreads = 2,
    };

    /// <summary>Runs <paramref name="options"/> to completion; returns per-step losses, final weights and the run's device peak.</summary>
    public static (double[] Losses, float[][] Weights, IReadOnlyList<StepMetrics> Metrics) Run(Backend backend, TrainOptions options,
        float[][]? init = null, TrainingState? resume = null)
    {
        using var trainer = new Trainer(backend, options, Corpus(options.Config.VocabSize), init, resume);
        var metrics = trainer.Run(cancel: Xunit.TestContext.Current.CancellationToken);
        return (metrics.Select(m => m.Loss).ToArray(), trainer.Weights(), metrics);
    }

    public static float[] Flatten(float[][] layers) => layers.SelectMany(l => l).ToArray();
}
