// The --stash-codec and --stash-group options shared by `l2l train` and `l2l bench train`.
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
        new Option<string>("--stash-codec") { Description = "Relay stash storage: none (FP32), int8, int4 or int2 (per-group min/max, unbiased stochastic rounding; the forward stays exact).", DefaultValueFactory = _ => "none" },
        new Option<int>("--stash-group") { Description = "Values per stash-codec group sharing one FP32 min and max (a multiple of 16).", DefaultValueFactory = _ => StashCodecSettings.DefaultGroupSize });

    /// <summary>The codec is one of the names.</summary>
    public static Rule CodecRule(Option<string> codec) =>
        Rules.OneOf(codec, Enum.GetNames<StashCodec>().Select(n => n.ToLowerInvariant()), "stash codec");

    /// <summary>The group size is a positive multiple of 16.</summary>
    public static Rule GroupRule(Option<int> group) =>
        Rules.Custom("--stash-group is a positive multiple of 16", p => p.GetValue(group) is var g && g > 0 && g % StashCodecKernels.GroupMultiple == 0 ? null
            : $"--stash-group {p.GetValue(group)} must be a positive multiple of {StashCodecKernels.GroupMultiple} (e.g. 256), so every group's codes fill whole 32-bit words");

    /// <summary>The settings the two options give (parsed after the rules have passed).</summary>
    public static StashCodecSettings Settings(ParseResult parse, Option<string> codec, Option<int> group) =>
        new(Enums.Parse<StashCodec>(parse.GetValue(codec)!, "--stash-codec"), parse.GetValue(group));

    /// <summary>One line for the run header: the codec and the bytes one stashed activation takes.</summary>
    public static string Describe(StashCodecSettings codec, TrainOptions options)
    {
        var values = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen).ActivationLength;
        var bytes = codec.StashedBytes(values);
        return $"stash codec: {codec.Codec.ToString().ToLowerInvariant()}, groups of {codec.GroupSize}: {bytes:N0} bytes per stashed activation " +
               $"instead of {4 * values:N0} ({4.0 * values / bytes:F2}x smaller)";
    }
}
