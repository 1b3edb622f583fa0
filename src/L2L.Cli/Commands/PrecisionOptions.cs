// The --precision and --loss-scale options shared by train, eval and bench train: their text, checks and parsing.
using System.CommandLine;
using System.Globalization;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Training.Update;

namespace L2L.Cli.Commands;

/// <summary><c>--precision fp32|bf16|fp16</c>: how weights, activations, the stash and boundary gradients are stored on the device.</summary>
internal static class PrecisionOption
{
    /// <summary>The accepted names.</summary>
    public static readonly string[] Names = ["fp32", "bf16", "fp16"];

    /// <summary>The option, default fp32.</summary>
    public static Option<string> Create() => new("--precision")
    {
        Description = "Device and bus storage: fp32, bf16 or fp16 (16-bit weights, activations, stash and boundary gradients; FP32 master weights, " +
            "optimizer state and gradient accumulation; see README 'Mixed precision').",
        DefaultValueFactory = _ => "fp32",
    };

    /// <summary>The value is one of <see cref="Names"/>.</summary>
    public static Rule Rule(Option<string> option) => Rules.OneOf(option, Names, "precision");

    /// <summary>The precision <paramref name="text"/> names (checked by <see cref="Rule"/>).</summary>
    public static Precision Parse(string text) =>
        Precisions.TryParse(text) ?? throw new CliException($"--precision {text} is not a known precision. Use one of: {string.Join(", ", Names)}");
}

/// <summary><c>--loss-scale none|N|dynamic</c>: no scaling, a static scale, or GradScaler-style dynamic scaling.</summary>
internal static class LossScaleOption
{
    /// <summary>The value is none, dynamic or a positive finite number.</summary>
    public static Rule Rule(Option<string> option) => Rules.Custom("--loss-scale is none, dynamic or a positive number", p =>
    {
        var text = p.GetValue(option);
        return text is null || Parse(text, out _, out _) ? null
            : $"--loss-scale {text} is not a loss scale. Use none, dynamic, or a positive number such as 1024 (a power of two keeps the scaling exact)";
    });

    /// <summary>The mode and, for a static scale, its value.</summary>
    public static (LossScaleMode Mode, float? Static) Parse(string text) =>
        Parse(text, out var mode, out var value) ? (mode, value)
            : throw new CliException($"--loss-scale {text} is not a loss scale. Use none, dynamic, or a positive number such as 1024");

    private static bool Parse(string text, out LossScaleMode mode, out float? value)
    {
        value = null;
        mode = LossScaleMode.None;
        var t = text.Trim().ToLowerInvariant();
        if (t == "none") return true;
        if (t == "dynamic")
        {
            mode = LossScaleMode.Dynamic;
            return true;
        }
        if (float.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n > 0 && float.IsFinite(n))
        {
            value = n;
            return true;
        }
        return false;
    }
}
