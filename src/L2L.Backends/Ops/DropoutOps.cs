// Launcher for the dropout kernel.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Inverted dropout with hashed masks (see <see cref="DropoutKernels"/>), loaded once per accelerator.</summary>
public sealed class DropoutOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ulong, long, uint, float> _dropout;

    /// <summary>Loads the kernel on <paramref name="backend"/>'s accelerator.</summary>
    public DropoutOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _dropout = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ulong, long, uint, float>(DropoutKernels.DropoutKernel);
    }

    /// <summary>
    /// <c>output = dropout(input)</c> with drop probability <paramref name="p"/> in [0, 1), the mask of
    /// <paramref name="key"/> at element indices starting from <paramref name="offset"/>; <c>output</c> may alias <c>input</c>.
    /// The same call on a gradient is the backward.
    /// </summary>
    public void Apply(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input, float p, ulong key, long offset)
    {
        Check.SameLength(output, input, nameof(input));
        if (!(p >= 0f && p < 1f))
            throw new ArgumentOutOfRangeException(nameof(p), p, "A drop probability must be in [0, 1).");
        if (output.Length == 0) return;
        _dropout(s, Launch.Elementwise(_accelerator, output.Length), output, input, key, offset, DropoutKernels.Threshold(p), 1f / (1f - p));
    }
}
