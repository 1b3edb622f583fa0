// Launchers for the residual kernels.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Residual add and gradient accumulation, loaded once per accelerator.</summary>
public sealed class ResidualOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _add;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _accumulate;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float> _scaledAdd;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public ResidualOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _add = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(ResidualKernels.ResidualForwardKernel);
        _accumulate = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ResidualKernels.AccumulateKernel);
        _scaledAdd = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float>(ResidualKernels.ScaledAddKernel);
    }

    /// <summary><c>output = a + b</c>, all of one length; <c>output</c> may alias an input.</summary>
    public void Add(AcceleratorStream stream, ArrayView<float> output, ArrayView<float> a, ArrayView<float> b)
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        _add(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b);
    }

    /// <summary>
    /// <c>output = wa * a + wb * b</c>, all of one length; <c>output</c> may alias an input. With <c>b = a</c> and
    /// <c>wb = 0</c> it scales <c>a</c> (in place when <c>output</c> is <c>a</c>).
    /// </summary>
    public void ScaledAdd(AcceleratorStream stream, ArrayView<float> output, ArrayView<float> a, float wa, ArrayView<float> b, float wb)
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        _scaledAdd(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b, wa, wb);
    }

    /// <summary><c>target += source</c>.</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<float> target, ArrayView<float> source)
    {
        Check.SameLength(target, source, nameof(source));
        if (target.Length == 0) return;
        _accumulate(stream, Launch.Elementwise(_accelerator, target.Length), target, source);
    }
}
