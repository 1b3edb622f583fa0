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
                $"Unknown device '{text}'. Use auto, cpu, cuda or opencl, optionally followed by ':index' (e.g. cuda:1)."),
        };
        var index = 0;
        if (parts.Length == 2 && (!int.TryParse(parts[1], out index) || index < 0))
            throw new FormatException($"Bad device index in '{text}': expected a non-negative integer after ':'.");
        if (kind == DeviceKind.Auto && parts.Length == 2)
            throw new FormatException($"'{text}': 'auto' takes no index.");
        return new DeviceSpec(kind, index);
    }

    /// <summary>
    /// The spec to use: the explicit option when given and not <c>auto</c>, else <see cref="EnvironmentVariable"/>
    /// when set, else <c>auto</c>.
    /// </summary>
    public static DeviceSpec Resolve(string? option)
    {
        if (!string.IsNullOrWhiteSpace(option))
        {
            var spec = Parse(option);
            if (spec.Kind != DeviceKind.Auto)
                return spec;
        }
        var env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(env) ? Auto : Parse(env);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        Kind == DeviceKind.Auto ? "auto" : $"{Kind.ToString().ToLowerInvariant()}:{Index}";
}
