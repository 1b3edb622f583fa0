// Launchers for the FP32 <-> FP16 casts of mixed precision.
using ILGPU;
using Half = ILGPU.Half;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>FP32 &lt;-&gt; <see cref="Half"/> casts, round to nearest even on every backend; kernels loaded once per accelerator.</summary>
public sealed class CastOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<float>> _toHalf;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Half>> _toFloat;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public CastOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _toHalf = _accelerator.LoadKernel<ArrayView<Half>, ArrayView<float>>(CastKernels.ToHalfKernel);
        _toFloat = _accelerator.LoadKernel<ArrayView<float>, ArrayView<Half>>(CastKernels.ToFloatKernel);
    }

    /// <summary><c>output = (half)input</c>, same length; round to nearest even, overflow to infinity.</summary>
    public void ToHalf(AcceleratorStream s, ArrayView<Half> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _toHalf(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>output = (float)input</c>, same length; exact.</summary>
    public void ToFloat(AcceleratorStream s, ArrayView<float> output, ArrayView<Half> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _toFloat(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }
}
