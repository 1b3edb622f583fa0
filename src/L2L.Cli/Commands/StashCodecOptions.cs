// The --stash-codec, --stash-group, --stash-bits-budget and --stash-adapt-every options shared by `l2l train` and `l2l bench train`.
using System.CommandLine;
using L2L.Cli.Validation;
using L2L.Kernels;
using L2L.Model.Device;
using L2L.Training;
using L2L.Training.Stash;

namespace L2L.Cli.Commands;

internal static class StashCodecOptions
{
    /// <summary>The two options, with their defaults (no codec, groups of 256).</summary>
    public static (Option<string> Codec, Option<int> Group) Create() => (
        new Option<string>("--stash-codec") { Description = "Relay stash storage: none (FP32), int8, int4, int2 (per-group min/max, unbiased stochastic rounding; the forward stays exact) or adaptive (8, 4 or 2 bits per level, chosen to minimise the estimated gradient variance under --stash-bits-budget).", DefaultValueFactory = _ => "none" },
        new Option<int>("--stash-group") { Description = "Values per stash-codec group sharing one FP32 min and max (a multiple of 16).", DefaultValueFactory = _ => StashCodecSettings.DefaultGroupSize });

    /// <summary>The adaptive codec's two options, with their defaults (4 bits on average, re-estimated every 10 steps).</summary>
    public static (Option<float> Budget, Option<int> Every) CreateAdaptive() => (
        new Option<float>("--stash-bits-budget") { Description = "Adaptive stash codec: the most bits per stash level on average, in [2, 8] (the levels' bits sum to at most floor(L x budget)).", DefaultValueFactory = _ => StashCodecSettings.DefaultBitsBudget },
        new Option<int>("--stash-adapt-every") { Description = "Adaptive stash codec: re-estimate the bits per level every K steps (steps 0, K, 2K, ...; each estimate sets the bits of the steps after it).", DefaultValueFactory = _ => StashCodecSettings.DefaultAdaptEvery });

    /// <summary>
    /// The budget is in [2, 8], the interval at least 1, and both apply only to the adaptive codec (<paramref name="codecOf"/>
    /// gives the codec the run will use, or null while it is not known yet, e.g. before a resumed checkpoint is read).
    /// </summary>
    public static IEnumerable<Rule> AdaptiveRules(Option<float> budget, Option<int> every, Func<ParseResult, string?> codecOf)
    {
        bool Adaptive(ParseResult p) => codecOf(p) is not { } codec || string.Equals(codec, "adaptive", StringComparison.OrdinalIgnoreCase);
        yield return Rules.Custom("--stash-bits-budget is in [2, 8]", p => p.GetValue(budget) is var b && b >= 2f && b <= 8f ? null
            : $"{Rules.Typed(p, budget)} {p.GetValue(budget).ToString(System.Globalization.CultureInfo.InvariantCulture)} is out of range: each stash level takes 2, 4 or 8 bits, so the average budget must be in [2, 8] (e.g. 4)");
        yield return Rules.AtLeast(every, 1);
        yield return Rules.AppliesOnlyTo(budget, Adaptive, "--stash-codec adaptive");
        yield return Rules.AppliesOnlyTo(every, Adaptive, "--stash-codec adaptive");
    }

    /// <summary>The codec is one of the names.</summary>
    public static Rule CodecRule(Option<string> codec) =>
        Rules.OneOf(codec, Enum.GetNames<StashCodec>().Select(n => n.ToLowerInvariant()), "stash codec");

    /// <summary>The group size is a positive multiple of 16.</summary>
    public static Rule GroupRule(Option<int> group) =>
        Rules.Custom("--stash-group is a positive multiple of 16", p => p.GetValue(group) is var g && g > 0 && g % StashCodecKernels.GroupMultiple == 0 ? null
            : $"--stash-group {p.GetValue(group)} must be a positive multiple of {StashCodecKernels.GroupMultiple} (e.g. 256), so every group's codes fill whole 32-bit words");

    /// <summary>The settings the two options give (parsed after the rules have passed).</summary>
    public static StashCodecSettings Settings(ParseResult parse, Option<string> codec, Option<int> group, Option<float> budget, Option<int> every) =>
        new(Enums.Parse<StashCodec>(parse.GetValue(codec)!, "--stash-codec"), parse.GetValue(group), BitsBudget: parse.GetValue(budget), AdaptEvery: parse.GetValue(every));

    /// <summary>One line for the run header: the codec and the bytes one stashed activation takes (adaptive: continuing from the <paramref name="resumed"/> checkpoint metadata, if any).</summary>
    public static string Describe(StashCodecSettings codec, TrainOptions options, IReadOnlyDictionary<string, string>? resumed = null)
    {
        var values = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen).ActivationLength;
        if (codec.IsAdaptive)
            return DescribeAdaptive(codec, options, values, resumed);
        var bytes = codec.StashedBytes(values);
        return $"stash codec: {codec.Codec.ToString().ToLowerInvariant()}, groups of {codec.GroupSize}: {bytes:N0} bytes per stashed activation " +
               $"instead of {4 * values:N0} ({4.0 * values / bytes:F2}x smaller)";
    }

    // The adaptive codec: its budget and interval, the per-activation sizes it chooses between, and what it allocates.
    private static string DescribeAdaptive(StashCodecSettings codec, TrainOptions options, long values, IReadOnlyDictionary<string, string>? resumed)
    {
        var state = new AdaptiveBits(options.Config.Layers, codec.BitsBudget);
        var continued = resumed is not null && state.Load(resumed);
        var levels = options.Config.Layers;
        var footprint = StashFootprint.Of(codec, options.Stash, levels, options.MicroBatches, values);
        var sizes = string.Join(" / ", AdaptiveBits.Widths.Reverse().Select(b => $"{codec.StashedBytes(values, b):N0}"));
        var where = options.Stash == StashPlacement.Device
            ? $"a device pool of {footprint.StashBytes:N0} bytes, enough for any choice within the budget"
            : $"{footprint.HostBytes:N0} pinned host bytes and two device slots of {footprint.StashBytes / 2:N0} bytes";
        var budget = codec.BitsBudget.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return $"stash codec: adaptive, groups of {codec.GroupSize}: 8, 4 or 2 bits per stash level ({sizes} bytes per stashed activation " +
               $"instead of {4 * values:N0}), at most {AdaptiveBits.BudgetBits(levels, codec.BitsBudget)} bits over {levels} levels (budget {budget} on average), " +
               $"re-estimated at every step that is a multiple of {codec.AdaptEvery}; {where}; " +
               (continued ? "bits of the first step, from the checkpoint" : "bits before the first estimate") + $": [{string.Join(",", state.Current)}]";
    }
}
