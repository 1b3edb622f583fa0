// Launchers for GELU (GPT-2's tanh approximation).
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>GELU, <c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>, element-wise; kernels loaded once per accelerator.</summary>
public sealed class GeluOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _backward;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public GeluOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(GeluKernels.GeluForwardKernel);
        _backward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(GeluKernels.GeluBackwardKernel);
    }

    /// <summary><c>output = gelu(input)</c>, both of one length; <c>output</c> may alias <c>input</c>.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _forward(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>dInput = dOutput * gelu'(input)</c> (assigned), all of one length; <c>dInput</c> may alias <c>dOutput</c>.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        _backward(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }
}
