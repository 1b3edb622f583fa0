// The settings that shape a run's trajectory, as checkpoint metadata, so a resumed run can be held to them.
using System.Globalization;

namespace L2L.Training;

/// <summary>
/// Names and text forms of the settings a checkpoint records: everything that changes the
/// trajectory of training (batching, optimizer and its hyper-parameters, schedule, data order,
/// seed, executor and stash placement). Host thread counts and device choice are left out: they do
/// not change results.
/// </summary>
public static class RunSettings
{
    /// <summary>Metadata keys, in the order they are reported.</summary>
    public const string Executor = "executor", Stash = "stash", Batch = "batch", Seq = "seq", MicroBatches = "micro_batches",
        Optimizer = "optimizer_kind", LearningRate = "lr", WeightDecay = "weight_decay", Beta1 = "beta1", Beta2 = "beta2", Epsilon = "eps",
        Schedule = "schedule", Warmup = "warmup", Steps = "steps", Shuffle = "shuffle", Seed = "seed";

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
        };
    }
}
