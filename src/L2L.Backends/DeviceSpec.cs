// Which accelerator the engine should run on: parsed from --device or L2L_DEVICE.
namespace L2L.Backends;

/// <summary>The kinds of accelerator the engine can run on.</summary>
public enum DeviceKind
{
    /// <summary>CUDA if present, then OpenCL, then the CPU accelerator.</summary>
    Auto,
    /// <summary>ILGPU's CPU accelerator (a simulator; slow, always present).</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through the CUDA driver.</summary>
    Cuda,
    /// <summary>An OpenCL 2.x device.</summary>
    OpenCL,
}

/// <summary>A requested device: a kind and, for a concrete kind, an index among devices of that kind.</summary>
/// <param name="Kind">The kind asked for.</param>
/// <param name="Index">The index among devices of that kind (0 = first).</param>
public readonly record struct DeviceSpec(DeviceKind Kind, int Index = 0)
{
    /// <summary>The environment variable that overrides <c>auto</c>: <c>cpu</c>, <c>cuda</c>, <c>opencl</c>, optionally <c>:index</c>.</summary>
    public const string EnvironmentVariable = "L2L_DEVICE";

    /// <summary>Automatic selection.</summary>
    public static DeviceSpec Auto => new(DeviceKind.Auto);

    /// <summary>
    /// Parses <c>auto</c>, <c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>, <c>opencl</c>, <c>opencl:0</c> (case-insensitive).
    /// </summary>
    /// <exception cref="FormatException">The text is not a device specification.</exception>
    public static DeviceSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var trimmed = text.Trim();
        var parts = trimmed.Split(':', 2);
        var kind = parts[0].ToLowerInvariant() switch
        {
            "auto" or "" => DeviceKind.Auto,
            "cpu" => DeviceKind.Cpu,
            "cuda" or "gpu" => DeviceKind.Cuda,
            "opencl" or "cl" => DeviceKind.OpenCL,
            _ => throw new FormatException(
                $"'{text}' is not a device. Use auto, cpu, cuda or opencl, optionally followed by ':index' (e.g. cuda:1)."),
        };
        var index = 0;
        if (parts.Length == 2 && (!int.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out index)))
            throw new FormatException($"'{text}' has a bad device index. Put a non-negative integer after ':' (e.g. {parts[0]}:0).");
        if (kind == DeviceKind.Auto && parts.Length == 2)
            throw new FormatException($"'{text}' is not a device: 'auto' takes no index. Use auto, or a kind with an index such as cuda:1.");
        return new DeviceSpec(kind, index);
    }

    /// <summary>
    /// The spec to use: the explicit option when given and not <c>auto</c>, else <see cref="EnvironmentVariable"/>
    /// when set, else <c>auto</c>.
    /// </summary>
    /// <param name="option">The option's value, if any.</param>
    /// <param name="optionName">How the option is called in messages (e.g. <c>--device</c>).</param>
    /// <exception cref="FormatException">The option or the environment variable is not a device; the message names which one.</exception>
    public static DeviceSpec Resolve(string? option, string optionName = "--device")
    {
        if (!string.IsNullOrWhiteSpace(option))
        {
            var spec = ParseFrom(option, optionName);
            if (spec.Kind != DeviceKind.Auto)
                return spec;
        }
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(env) ? Auto : ParseFrom(env, EnvironmentVariable);
    }

    private static DeviceSpec ParseFrom(string text, string source)
    {
        try
        {
            return Parse(text);
        }
        catch (FormatException e)
        {
            throw new FormatException($"{source}: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public override string ToString() =>
        Kind == DeviceKind.Auto ? "auto" : $"{Kind.ToString().ToLowerInvariant()}:{Index}";
}
