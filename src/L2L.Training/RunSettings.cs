// The settings that shape a run's trajectory, as checkpoint metadata, so a resumed run can be held to them.
using System.Globalization;

namespace L2L.Training;

/// <summary>
/// Names and text forms of the settings a checkpoint records: everything that changes the
/// trajectory of training (batching, optimizer and its hyper-parameters, schedule, data order,
/// seed, executor and stash placement, update mode, clipping, loss scaling, dropout, layer drop,
/// freezing, optimizer-state precision, stash codec, where the relay updates the embedding, and the device precision).
/// Optional settings are recorded by their effective value (the resolved update mode, "none" for
/// no clipping or freezing). Host thread counts and device choice are left out: they do not change results.
/// </summary>
public static class RunSettings
{
    /// <summary>Metadata keys, in the order they are reported.</summary>
    public const string Executor = "executor", Stash = "stash", Batch = "batch", Seq = "seq", MicroBatches = "micro_batches",
        Optimizer = "optimizer_kind", LearningRate = "lr", WeightDecay = "weight_decay", Beta1 = "beta1", Beta2 = "beta2", Epsilon = "eps",
        Schedule = "schedule", Warmup = "warmup", Steps = "steps", Shuffle = "shuffle", Seed = "seed",
        UpdateMode = "update_mode", ClipGradNorm = "clip_grad_norm", ClipMode = "clip_mode", LossScale = "loss_scale_mode",
        Dropout = "dropout", LayerDrop = "layer_drop", Freeze = "freeze", OptimizerState = "optimizer_state",
        StashCodec = "stash_codec", StashGroup = "stash_group", EmbeddingUpdate = "embedding_update", UnitScaling = "unit_scaling",
        StashBitsBudget = "stash_bits_budget", StashAdaptEvery = "stash_adapt_every", Precision = "precision";

    /// <summary>The recorded form of an absent optional setting (no clipping, nothing frozen, the config's dropout).</summary>
    public const string None = "none", ConfigDropout = "config";

    /// <summary>The recorded form of <paramref name="o"/>: one string per key.</summary>
    public static Dictionary<string, string> Describe(TrainOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        static string Lower<T>(T value) where T : struct, Enum => value.ToString().ToLowerInvariant();
        static string Number(float value) => value.ToString("R", CultureInfo.InvariantCulture);
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Executor] = Lower(o.Executor),
            [Stash] = Lower(o.Stash),
            [Batch] = o.Batch.ToString(CultureInfo.InvariantCulture),
            [Seq] = o.SeqLen.ToString(CultureInfo.InvariantCulture),
            [MicroBatches] = o.MicroBatches.ToString(CultureInfo.InvariantCulture),
            [Optimizer] = Lower(o.Optimizer.Kind),
            [LearningRate] = Number(o.Optimizer.LearningRate),
            [WeightDecay] = Number(o.Optimizer.WeightDecay),
            [Beta1] = Number(o.Optimizer.Beta1),
            [Beta2] = Number(o.Optimizer.Beta2),
            [Epsilon] = Number(o.Optimizer.Epsilon),
            [Schedule] = Lower(o.Schedule),
            [Warmup] = o.Warmup.ToString(CultureInfo.InvariantCulture),
            [Steps] = o.Steps.ToString(CultureInfo.InvariantCulture),
            [Shuffle] = o.Shuffle ? "true" : "false",
            [Seed] = o.Seed.ToString(CultureInfo.InvariantCulture),
            [UpdateMode] = Lower(o.ResolvedUpdateMode),
            [ClipGradNorm] = o.ClipGradNorm is { } clip ? Number(clip) : None,
            [ClipMode] = Lower(o.ClipMode),
            [LossScale] = o.StaticLossScale is { } scale ? Number(scale) : Lower(o.LossScale),
            [Dropout] = DescribeDropout(o.ResolvedDropout),
            [LayerDrop] = Number(o.LayerDrop),
            [Freeze] = string.IsNullOrWhiteSpace(o.Freeze) ? None : o.Freeze.Trim(),
            [OptimizerState] = Lower(o.OptimizerState),
            [StashCodec] = Lower(o.StashCodec),
            [StashGroup] = o.StashGroup.ToString(CultureInfo.InvariantCulture),
            [EmbeddingUpdate] = Lower(o.ResolvedEmbeddingUpdate),
            [UnitScaling] = o.Config is Model.GptConfig { UnitScaling: true } ? "true" : "false",
            [StashBitsBudget] = Number(o.StashBitsBudget),
            [StashAdaptEvery] = o.StashAdaptEvery.ToString(CultureInfo.InvariantCulture),
            [Precision] = Backends.Precisions.Name(o.Precision),
        };
    }

    // One probability when the embedding and residual rates agree (what --dropout P sets), else the config's own rates.
    private static string DescribeDropout(Model.Device.DropoutRates rates) =>
        rates.Embedding == rates.Residual && rates.Attention == 0f
            ? rates.Residual.ToString("R", CultureInfo.InvariantCulture)
            : ConfigDropout;
}
