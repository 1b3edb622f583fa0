// The search over execution plans: every micro-batch split, executor, stash placement and codec, kept if it fits, ranked by predicted time.
using System.Diagnostics;
using L2L.Backends;
using L2L.Model;
using L2L.Training.Optim;
using L2L.Training.Stash;
using L2L.Training.Update;

namespace L2L.Training.Planning;

/// <summary>What the search varies and what it keeps fixed.</summary>
/// <param name="Config">The model.</param>
/// <param name="Batch">Sequences per step; every micro-batch count that divides it is tried (unless <paramref name="MicroBatches"/> fixes it).</param>
/// <param name="SeqLen">Tokens per sequence.</param>
/// <param name="Optimizer">The optimizer (LAMB: relay only).</param>
/// <param name="EmbeddingUpdate">Relay: where the embedding and head are updated; null picks the device for SGD and AdamW, the host for LAMB.</param>
/// <param name="UpdateMode">Relay: eager or deferred host updates.</param>
/// <param name="OptimizerState">Relay: the host optimizer state's precision.</param>
/// <param name="StashGroup">The codecs' group size.</param>
/// <param name="Device">The device's limits.</param>
/// <param name="Executors">Executors to try (null: relay and conventional).</param>
/// <param name="Stashes">Relay stash placements to try (null: device and host).</param>
/// <param name="Codecs">Relay stash codecs to try (null: none, int8, int4, int2).</param>
/// <param name="MicroBatches">Micro-batch counts to try (null: every divisor of the batch).</param>
/// <param name="Precision">The device storage precision (fixed, not searched).</param>
public sealed record PlanSpace(IModelConfig Config, int Batch, int SeqLen, OptimizerKind Optimizer, UpdateLocation? EmbeddingUpdate, UpdateMode UpdateMode,
    StatePrecision OptimizerState, int StashGroup, DeviceShape Device, IReadOnlyList<ExecutorKind>? Executors = null,
    IReadOnlyList<StashPlacement>? Stashes = null, IReadOnlyList<StashCodec>? Codecs = null, IReadOnlyList<int>? MicroBatches = null,
    Precision Precision = Precision.Fp32)
{
    /// <summary>Every configuration in the space, as plan settings.</summary>
    public IEnumerable<PlanSettings> Settings()
    {
        var embedding = EmbeddingUpdate ?? (DeviceLayerOptimizer.Supports(Optimizer) ? UpdateLocation.Device : UpdateLocation.Host);
        var counts = MicroBatches ?? Enumerable.Range(1, Batch).Where(u => Batch % u == 0).ToArray();
        foreach (var u in counts)
        foreach (var executor in Executors ?? [ExecutorKind.Relay, ExecutorKind.Conventional])
        {
            if (executor == ExecutorKind.Conventional)
            {
                if (Optimizer == OptimizerKind.Lamb) continue;
                yield return new PlanSettings(Config, Batch / u, u, SeqLen, executor, StashPlacement.Device, new StashCodecSettings(StashCodec.None, StashGroup),
                    Optimizer, UpdateLocation.Device, UpdateMode.Eager, StatePrecision.Fp32, Device, Precision: Precision);
                continue;
            }
            foreach (var stash in Stashes ?? [StashPlacement.Device, StashPlacement.Host])
            foreach (var codec in Codecs ?? [StashCodec.None, StashCodec.Int8, StashCodec.Int4, StashCodec.Int2])
                yield return new PlanSettings(Config, Batch / u, u, SeqLen, executor, stash, new StashCodecSettings(codec, StashGroup),
                    Optimizer, embedding, UpdateMode, OptimizerState, Device, Precision: Precision);
        }
    }
}

/// <summary>One searched configuration with its plan, predicted time and whether it fits.</summary>
/// <param name="Plan">Its buffers and transfers.</param>
/// <param name="Time">Its predicted step time.</param>
/// <param name="FitsDevice">Whether its device peak is within the device budget.</param>
/// <param name="FitsHost">Whether its host bytes are within the host budget (true without one).</param>
public sealed record PlanCandidate(ExecutionPlan Plan, StepTime Time, bool FitsDevice, bool FitsHost)
{
    /// <summary>Whether it fits both budgets.</summary>
    public bool Fits => FitsDevice && FitsHost;

    /// <summary>Predicted tokens per second.</summary>
    public double TokensPerSecond => Plan.Settings.Batch * (double)Plan.Settings.SeqLen / Time.Step;

    /// <summary>A short name: executor, stash, codec and the micro-batch split.</summary>
    public string Name
    {
        get
        {
            var s = Plan.Settings;
            var what = s.Executor == ExecutorKind.Conventional ? "conventional"
                : $"relay, {s.Stash.ToString().ToLowerInvariant()} stash" + (s.Codec.Enabled ? $", {s.Codec.Codec.ToString().ToLowerInvariant()}" : "");
            return $"{what}, {s.MicroBatches} x {s.MicroBatchSize}";
        }
    }
}

/// <summary>The search's outcome.</summary>
/// <param name="Candidates">Every configuration: those that fit first, by predicted step time (ties: more codec bits, then fewer device bytes), then the rest by device bytes.</param>
/// <param name="Pick">The fastest that fits, or null when none does.</param>
/// <param name="DeviceBudget">The device memory searched for.</param>
/// <param name="HostBudget">The host memory searched for, if any.</param>
/// <param name="BlocksCosted">Distinct blocks the time model costed (the repeated block folded once per micro-batch shape).</param>
/// <param name="Seconds">How long the search took.</param>
public sealed record PlanSearchResult(IReadOnlyList<PlanCandidate> Candidates, PlanCandidate? Pick, long DeviceBudget, long? HostBudget, int BlocksCosted, double Seconds)
{
    /// <summary>The configuration needing the least device memory (what a budget must at least hold).</summary>
    public PlanCandidate Smallest => Candidates.MinBy(c => c.Plan.DevicePeakBytes)!;
}

/// <summary>Enumerates, plans, filters and ranks configurations.</summary>
public static class PlanSearch
{
    /// <summary>Searches <paramref name="space"/> for the fastest configuration within the budgets.</summary>
    public static PlanSearchResult Search(PlanSpace space, long deviceBudget, long? hostBudget, StepTimeModel model)
    {
        var clock = Stopwatch.StartNew();
        var candidates = space.Settings().Select(settings =>
        {
            var plan = Planner.Plan(settings);
            return new PlanCandidate(plan, model.Predict(plan), plan.DevicePeakBytes <= deviceBudget, hostBudget is not { } h || plan.HostBytes <= h);
        }).ToList();
        // Equal predicted times (codecs cost the same whatever their width) go to the more exact stash, then the smaller peak.
        var ranked = candidates.Where(c => c.Fits).OrderBy(c => c.Time.Step).ThenByDescending(c => c.Plan.Settings.Codec.Bits).ThenBy(c => c.Plan.DevicePeakBytes)
            .Concat(candidates.Where(c => !c.Fits).OrderBy(c => c.Plan.DevicePeakBytes)).ToList();
        var pick = ranked.FirstOrDefault(c => c.Fits);
        return new PlanSearchResult(ranked, pick, deviceBudget, hostBudget, model.BlocksCosted, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Parses a byte size: a number with an optional unit, binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB), e.g. 16GiB or 512MiB.</summary>
    /// <exception cref="FormatException">Not such a size.</exception>
    public static long ParseBytes(string text)
    {
        var t = text.Trim();
        var units = new (string Suffix, double Factor)[]
        {
            ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("T", 1L << 40), ("B", 1),
        };
        var factor = 1.0;
        foreach (var (suffix, f) in units)
        {
            if (!t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) continue;
            factor = f;
            t = t[..^suffix.Length].Trim();
            break;
        }
        if (!double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var value) || !(value > 0) || double.IsInfinity(value * factor))
            throw new FormatException($"'{text}' is not a size; give a positive number of bytes with an optional unit, e.g. 16GiB, 512MiB or 24GB");
        return (long)Math.Min(value * factor, long.MaxValue);
    }
}
