// The --stash-codec and --stash-group options shared by `l2l train` and `l2l bench train`.
using System.CommandLine;
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

    /// <summary>One line for the run header: the codec and the bytes one stashed activation takes.</summary>
    public static string Describe(StashCodecSettings codec, TrainOptions options)
    {
        var values = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen).ActivationLength;
        var bytes = codec.StashedBytes(values);
        return $"stash codec: {codec.Codec.ToString().ToLowerInvariant()}, groups of {codec.GroupSize}: {bytes:N0} bytes per stashed activation " +
               $"instead of {4 * values:N0} ({4.0 * values / bytes:F2}x smaller)";
    }
}
